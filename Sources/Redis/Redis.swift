// placeholder for the Redis module
