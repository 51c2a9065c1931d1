"""What every layer uses: the user's errors, safe file writes, and this machine's processes. No torch."""
