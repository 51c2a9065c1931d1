"""A study's report from the store alone: its sections, figures, and their Markdown and HTML (report.write)."""
