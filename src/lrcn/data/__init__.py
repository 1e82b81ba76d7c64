"""Data sets: finding and splitting clips (dataset), decoding them once into the frame cache
(workers, cache), feeding them to training (loader, augment, features), checking a data set
(check) and generating the built-in synthetic one (synth)."""
