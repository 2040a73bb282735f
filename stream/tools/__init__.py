"""Operator commands that ship in the image: `stream dlq`, `stream produce`."""
