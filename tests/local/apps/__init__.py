"""Small v2-model Durable apps that the engine tests run through the real SDK."""
