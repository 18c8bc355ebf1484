print("swift-celery")
