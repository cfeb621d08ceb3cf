"""Papermill parameter profiles of the book's notebooks (smoke, colab, full), read by prs.experiments."""
