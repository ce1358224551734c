"""repedge edge node: classifies tweets from MQTT with a quantized TFLite model."""
