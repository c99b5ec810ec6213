"""What the host does for and to its plugins: loads them (plugins.toml, entry points), calls them so that a fault
names its plugin, checks what they return, and lends them shared machinery (DSA, ZCA, the reference classifier,
feature spaces; plugins take these through `ddbench.helpers`). Stands on `store`."""
