"""What runs in the user's process: Client, Future, FriskyExecutor."""
