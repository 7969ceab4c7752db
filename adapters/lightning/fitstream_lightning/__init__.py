"""fitstream-lightning."""
