"""What a study is: its Config, the architectures and their registry, study files, claims, run records, the
network's sizes and the code's provenance. Data only: no torch."""
