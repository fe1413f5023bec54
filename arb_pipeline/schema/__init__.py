"""The project's versioned SQL migrations (common/ for both servers, receiver/ for the
receiver) and the code that applies them.
"""
