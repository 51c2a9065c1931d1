"""Kept models at work: a stored run's model loaded back (kept), and answering pairs of the user's own images
(answer)."""
