"""The ``mergestudio`` command line."""
