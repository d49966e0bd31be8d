"""Real loopback servers (fake OpenAI API, SMTP) shared by tests and benchmarks."""
