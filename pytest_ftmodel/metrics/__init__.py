"""Pure computations returning result objects. Each module imports torch only inside functions."""
