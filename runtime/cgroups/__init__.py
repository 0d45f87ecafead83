"""Control groups: names in both driver forms, and managers for the v1 and
v2 hierarchies."""
