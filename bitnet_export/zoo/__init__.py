"""Small example models shipped with the package (the default demo and test models)."""
