"""Parameter shapes of real models, for the bench's model sizes.

Only the shapes: the bench fills them with random values, nothing is
downloaded.  A trainer steps a few huge matrices beside hundreds of small
biases and norm vectors; these lists reproduce that mix exactly, in the
order the models register their parameters.

- :func:`gpt2_shapes` -- GPT-2 small (Hugging Face ``gpt2``): 148 tensors,
  124,439,808 elements (the language-model head is tied to ``wte`` and not
  counted twice);
- :func:`resnet50_shapes` -- torchvision's ``resnet50``: 161 tensors,
  25,557,032 elements (convolutions without bias, a weight and a bias per
  BatchNorm; running statistics are buffers, not parameters);
- :func:`tiny_shapes` -- many tiny tensors: 2000 vectors of 1 to 4096
  elements, where a step's cost is its per-tensor overhead.
"""

__all__ = ["gpt2_shapes", "resnet50_shapes", "tiny_shapes"]


def gpt2_shapes(layers=12, width=768, vocab=50257, context=1024):
    """GPT-2's parameter shapes (Conv1D weights are stored ``in x out``)."""
    shapes = [(vocab, width), (context, width)]          # wte, wpe
    for _ in range(layers):
        shapes += [(width,), (width,)]                   # ln_1 weight, bias
        shapes += [(width, 3 * width), (3 * width,)]     # attn.c_attn
        shapes += [(width, width), (width,)]             # attn.c_proj
        shapes += [(width,), (width,)]                   # ln_2
        shapes += [(width, 4 * width), (4 * width,)]     # mlp.c_fc
        shapes += [(4 * width, width), (width,)]         # mlp.c_proj
    shapes += [(width,), (width,)]                       # ln_f
    return shapes


def resnet50_shapes(blocks=(3, 4, 6, 3), widths=(64, 128, 256, 512), expansion=4,
                    classes=1000):
    """torchvision ResNet-50's parameter shapes: bottleneck blocks (1x1,
    3x3, 1x1 convolutions, each followed by a BatchNorm), a 1x1 downsample
    convolution and BatchNorm in the first block of each stage."""
    shapes = []

    def conv_bn(out, inp, k):
        shapes.extend([(out, inp, k, k), (out,), (out,)])

    conv_bn(64, 3, 7)                                    # stem: conv1, bn1
    inp = 64
    for n, width in zip(blocks, widths):
        for b in range(n):
            conv_bn(width, inp, 1)
            conv_bn(width, width, 3)
            conv_bn(width * expansion, width, 1)
            if b == 0:                                   # downsample.0, .1
                conv_bn(width * expansion, inp, 1)
            inp = width * expansion
    shapes += [(classes, inp), (classes,)]               # fc
    return shapes


def tiny_shapes(count=2000, largest=4096):
    """``count`` vectors whose sizes run log-uniformly from 1 to
    ``largest`` elements, in a fixed shuffled order (deterministic: no
    random generator, so the list never changes)."""
    # Log-uniform, as in real models (many norms and biases, fewer big
    # tensors); the stride, coprime with count, interleaves small and large
    # so that no region of memory holds only one kind.
    stride = 997
    sizes = [round(largest ** (i / (count - 1))) for i in range(count)]
    return [(sizes[(k * stride) % count],) for k in range(count)]
