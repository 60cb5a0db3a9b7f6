"""The live demo: Kafka, Redis, a guard worker and a producer streaming scripted conversations."""
