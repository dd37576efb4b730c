"""The stages joined: collect, explain, score and index one unit at a time (what the Celery tasks run),
labeling options, the backend seam to the workers, and calibration on a user's corpus."""
