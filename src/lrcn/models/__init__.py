"""The model family (lrcn: the seed's LRCN and the shared parts; convlstm; effnet), the
registry that builds a model by name (registry), checkpoints (checkpoint) and the import of the
tutorial's Keras models (keras_import)."""
