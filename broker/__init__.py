"""repedge broker tooling: the project's Mosquitto configuration and users."""
