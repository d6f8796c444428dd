"""tutormax: enrich tutoring-platform records with derived fields and persist them."""

__version__ = "0.1.0"
