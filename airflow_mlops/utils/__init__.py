"""Small plain helpers shared by core modules and operators."""
