// placeholder for the JSON module
