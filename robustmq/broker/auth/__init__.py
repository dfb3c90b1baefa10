"""Authentication and authorization of broker clients (today: the enhanced-auth hook)."""
