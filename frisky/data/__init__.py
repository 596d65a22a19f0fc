"""How a value becomes bytes and travels: serialization, codecs, the data plane."""
