"""Ground truth closes the loop: every served prediction is logged (`writer`), joined later
with the FBI code the portal publishes for the same record (`labels`, `evaluation`), and the
realized accuracy of each served version is published (`results`) for the alerts, the retrain
trigger and promotion."""
