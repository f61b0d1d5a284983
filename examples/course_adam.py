"""The course notes' Adam calls on the parameters of a 2-5-2-1 network, with
fusedoptim: three steps with random gradients standing in for backprop's
(``python -m fusedoptim train`` trains the network itself)."""

import numpy as np

import fusedoptim as fo

rng = np.random.default_rng(0)
dims = [2, 5, 2, 1]
parameters = {}
for l in range(1, len(dims)):
    parameters[f"W{l}"] = rng.standard_normal((dims[l], dims[l - 1])) * np.sqrt(2 / dims[l - 1])
    parameters[f"b{l}"] = np.zeros((dims[l], 1))
v, s = fo.initialize_adam(parameters)
for t in range(1, 4):
    grads = {"d" + k: rng.standard_normal(a.shape) for k, a in parameters.items()}
    parameters, v, s, v_corrected, s_corrected = fo.update_parameters_with_adam(
        parameters, grads, v, s, t, learning_rate=0.01)
print(f"backend={fo.get_backend()} threads={fo.get_num_threads()}")
print("W1 after 3 Adam steps:\n", parameters["W1"])
