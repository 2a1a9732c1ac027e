"""Categories (a tree), products with SKUs, stock, on/off shelf, images."""
