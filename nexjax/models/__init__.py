"""The networks and their weights: torchvision-exact ResNets and fastai's head, state dicts <->
Flax variables, batched inference on the mesh, Grad-CAM, the scattering transform."""
