"""Physical substrates: instrument transports, SCPI and serial-board drivers, wiring maps."""
