"""The MQTT 3.1/3.1.1/5.0 broker: listeners, connection state machine, sessions."""
