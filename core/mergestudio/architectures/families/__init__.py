"""One data table per family. Order matters only for recognising single files by
tensor names: a family's ``marker`` must not match a family listed before it."""
