"""The pages of the main window's guided flow: Model, Data, Train, (Chat), Runs."""
