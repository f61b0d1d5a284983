"""PyTorch's counterpart of each optimizer class, for the ``torch`` rows.

``COUNTERPARTS[class name](optim, tensors, hp)`` builds the ``torch.optim``
optimizer over ``tensors`` (their ``.grad`` set) with the bench
hyperparameters ``hp`` of the fusedoptim class (``workloads.hyperparameters``)
and PyTorch's fastest CPU path: ``fused=True`` where PyTorch has a fused CPU
kernel (SGD, Adam, AdamW, Adagrad), ``foreach=True`` otherwise (RMSprop,
Adamax, NAdam, RAdam, Adadelta).
``optim`` is the ``torch.optim`` module (torch is imported only when a torch
row runs).  A class missing here gets no torch row.

The steps move the same arrays as fusedoptim's and, but for the classes in
:data:`INEXACT`, compute the same update (up to rounding).
"""

__all__ = ["COUNTERPARTS", "INEXACT"]

#: Class name -> how PyTorch's counterpart differs in a detail that costs
#: nothing measurable.
INEXACT = {
    "Momentum": "the course's EMA momentum is PyTorch's SGD with dampening = momentum, "
                "whose buffer starts at the first gradient",
    "RMSProp": "PyTorch adds eps outside the root, the course's RMSProp inside",
}


def _sgd_plain(optim, ps, hp):
    return optim.SGD(ps, lr=hp["lr"], fused=True)


def _ema_momentum(optim, ps, hp):
    return optim.SGD(ps, lr=hp["lr"], momentum=hp["beta"], dampening=hp["beta"], fused=True)


def _sgd(optim, ps, hp):
    return optim.SGD(ps, lr=hp["lr"], momentum=hp["momentum"], dampening=hp["dampening"],
                     nesterov=hp["nesterov"], weight_decay=hp["weight_decay"],
                     maximize=hp["maximize"], fused=True)


def _rmsprop(optim, ps, hp):
    # No fused CPU kernel in PyTorch 2.13; foreach is its fastest.
    return optim.RMSprop(ps, lr=hp["lr"], alpha=hp["beta"], eps=hp["eps"],
                         centered=hp["centered"], momentum=hp["momentum"],
                         weight_decay=hp["weight_decay"], maximize=hp["maximize"],
                         foreach=True)


def _adam_like(name):
    def build(optim, ps, hp):
        return getattr(optim, name)(ps, lr=hp["lr"], betas=hp["betas"], eps=hp["eps"],
                                    weight_decay=hp["weight_decay"], amsgrad=hp["amsgrad"],
                                    maximize=hp["maximize"], fused=True)
    build.__name__ = f"_{name.lower()}"
    return build


def _adagrad(optim, ps, hp):
    return optim.Adagrad(ps, lr=hp["lr"], lr_decay=hp["lr_decay"],
                         weight_decay=hp["weight_decay"],
                         initial_accumulator_value=hp["initial_accumulator_value"],
                         eps=hp["eps"], maximize=hp["maximize"], fused=True)


def _adamax(optim, ps, hp):
    # No fused CPU kernel in PyTorch 2.13 for these four; foreach is its fastest.
    return optim.Adamax(ps, lr=hp["lr"], betas=hp["betas"], eps=hp["eps"],
                        weight_decay=hp["weight_decay"], maximize=hp["maximize"],
                        foreach=True)


def _nadam(optim, ps, hp):
    return optim.NAdam(ps, lr=hp["lr"], betas=hp["betas"], eps=hp["eps"],
                       weight_decay=hp["weight_decay"], momentum_decay=hp["momentum_decay"],
                       decoupled_weight_decay=hp["decoupled_weight_decay"],
                       maximize=hp["maximize"], foreach=True)


def _radam(optim, ps, hp):
    return optim.RAdam(ps, lr=hp["lr"], betas=hp["betas"], eps=hp["eps"],
                       weight_decay=hp["weight_decay"],
                       decoupled_weight_decay=hp["decoupled_weight_decay"],
                       maximize=hp["maximize"], foreach=True)


def _adadelta(optim, ps, hp):
    return optim.Adadelta(ps, lr=hp["lr"], rho=hp["rho"], eps=hp["eps"],
                          weight_decay=hp["weight_decay"], maximize=hp["maximize"],
                          foreach=True)


#: fusedoptim class name -> builder of the torch optimizer.
COUNTERPARTS = {
    "GD": _sgd_plain,
    "Momentum": _ema_momentum,
    "SGD": _sgd,
    "RMSProp": _rmsprop,
    "Adam": _adam_like("Adam"),
    "AdamW": _adam_like("AdamW"),
    "Adagrad": _adagrad,
    "Adamax": _adamax,
    "NAdam": _nadam,
    "RAdam": _radam,
    "Adadelta": _adadelta,
}
