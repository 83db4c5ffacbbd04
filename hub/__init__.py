"""Publishing to the Hugging Face Hub: ``card`` writes a model card, ``push`` and ``push_space`` publish a model and
the app (sharing ``upload``). The model folder they publish is ``cnmc.export``'s; ``cnmc.load`` reads it back."""
