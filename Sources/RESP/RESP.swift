// placeholder for the RESP module
