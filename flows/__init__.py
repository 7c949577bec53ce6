"""Prefect flows: one per stage, the end-to-end retrain flow and promotion."""

from emotionthinker.services import quiet_stated_stops

quiet_stated_stops()  # every flow run, whoever starts it (CLI, schedule, test), logs a stated stop in one line
