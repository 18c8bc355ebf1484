// placeholder for the Celery module
