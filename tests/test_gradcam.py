"""Grad-CAM: the channel weights are the spatial mean of the gradient; a toy detector's map peaks
on the defect, with and without TTA; the TTA map turns with the image (ResNet10)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nexjax.data import augment
from nexjax.data import tta
from nexjax.models import gradcam
from nexjax.models import resnet
from nexjax.platform import parallel


class Stage(nn.Module):
  """8x8 average pooling of the normalised image, then a 1x1 conv + ReLU."""
  features: int = 3

  @nn.compact
  def __call__(self, x):
    x = nn.avg_pool(x, (8, 8), (8, 8))
    return nn.relu(nn.Conv(self.features, (1, 1), name='conv')(x))


class Toy(nn.Module):
  """`layer4` then a head: 'mean' (Dense on the pooled features) or 'flat' (Dense on all
  positions, so the logit's gradient differs per position)."""
  head: str = 'mean'

  @nn.compact
  def __call__(self, x, train=False):
    del train
    a = Stage(name='layer4')(x)
    a = a.mean(axis=(1, 2)) if self.head == 'mean' else a.reshape(len(a), -1)
    return nn.Dense(2, name='fc')(a)


def test_weights_are_the_spatial_mean_of_the_logit_gradient(random_resnet_variables):
  """Flat head: d logit / dA = the Dense kernel, so the map has a closed form."""
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (2, 32, 32, 1), np.uint8)
  model = Toy('flat')
  variables = random_resnet_variables(model, augment.prepare_batch(None, images, None))
  variables['params']['fc']['kernel'] = jnp.abs(variables['params']['fc']['kernel'])
  got, probability = jax.jit(lambda v, x: gradcam.class_activation(model, v, x))(variables, images)
  got = np.asarray(got)
  acts = np.asarray(Stage().apply({'params': variables['params']['layer4']},
                                  augment.prepare_batch(None, images, None)))
  kernel = np.asarray(variables['params']['fc']['kernel'])[:, gradcam.DEFECT].reshape(4, 4, 3)
  want = np.maximum(np.einsum('bhwc,c->bhw', acts, kernel.mean(axis=(0, 1))), 0)
  assert got.shape == (2, 4, 4) and want.max() > 0
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  logits = model.apply(variables, augment.prepare_batch(None, images, None))
  np.testing.assert_allclose(probability, jax.nn.softmax(logits)[:, gradcam.DEFECT], rtol=1e-6)


def bright_square_detector():
  """layer4 channel 0 = brightness, the defect logit = its mean: a bright-spot detector."""
  model = Toy('mean')
  params = {'layer4': {'conv': {'kernel': jnp.array([1.0, -1.0, 0.5] * 3).reshape(1, 1, 3, 3)
                                / 3, 'bias': jnp.zeros(3)}},
            'fc': {'kernel': jnp.array([[0.0, 1.0], [0.0, 0.0], [0.0, 0.0]]),
                   'bias': jnp.zeros(2)}}
  return model, {'params': params}


@pytest.mark.parametrize('use_tta', [False, True])
def test_the_map_peaks_on_the_region_the_logit_depends_on(use_tta):
  images = np.full((2, 64, 64, 1), 40, np.uint8)
  images[0, 8:24, 40:56] = 250          # top right
  images[1, 40:56, 8:24] = 250          # bottom left
  model, variables = bright_square_detector()
  maps = np.asarray(jax.jit(lambda v, x: gradcam.gradcam(model, v, x, tta=use_tta,
                                                         weight='none'))(variables, images))
  assert maps.shape == (2, 64, 64) and maps.min() == 0 and maps.max() == pytest.approx(1)
  for m, (rows, cols) in zip(maps, [(slice(8, 24), slice(40, 56)), (slice(40, 56), slice(8, 24))]):
    r, c = np.unravel_index(m.argmax(), m.shape)
    assert rows.start <= r < rows.stop and cols.start <= c < cols.stop
    inside = np.zeros(m.shape, bool)
    inside[rows, cols] = True
    assert m[inside].mean() > 5 * m[~inside].mean()


def test_undo_dihedral_views_restores_every_view():
  x = np.random.default_rng(1).random((2, 6, 6, 1)).astype(np.float32)
  restored = gradcam.undo_dihedral_views(tta.dihedral_views(x)[..., 0])
  for view in np.asarray(restored):
    np.testing.assert_array_equal(view, x[..., 0])


def test_tta_map_turns_with_the_image_resnet10(compile_cache, random_resnet_variables):
  """A random ResNet10 is not rotation invariant, but the TTA-averaged map is equivariant."""
  del compile_cache
  images = np.random.default_rng(2).integers(0, 256, (2, 64, 64, 1), np.uint8)
  model = resnet.create_model('resnet10', num_classes=2, width=8, head='fastai')  # as fine-tuned
  topo = parallel.topology()
  variables = parallel.replicate(
      random_resnet_variables(model, jnp.zeros((1, 64, 64, 3)), seed=3), topo)
  turned = np.rot90(images[:, :, ::-1], 1, axes=(1, 2))   # view 5 of the dihedral group
  maps = gradcam.gradcam_maps(model, variables, np.concatenate([images, turned]), topo,
                              batch_size=4, tta=True, progress=False)
  assert maps.shape == (4, 64, 64) and maps.dtype == np.float32
  np.testing.assert_allclose(maps[2:], np.rot90(maps[:2, :, ::-1], 1, axes=(1, 2)), atol=2e-5)
  assert np.abs(maps[2:] - maps[:2]).max() > 0.1    # not trivially symmetric maps


def test_a_confident_good_image_stays_cool():
  """weight='p_defect': each normalised map is scaled by P(defect), so a dark image that the
  bright-spot detector calls good has a map far below a bright one's."""
  images = np.full((2, 64, 64, 1), 10, np.uint8)
  images[1, 8:24, 40:56] = 250
  model, variables = bright_square_detector()
  variables['params']['fc']['bias'] = jnp.array([0.0, -1.0])  # P(defect) ~0.27 on dark, ~0.5 bright
  plain, weighted = (np.asarray(gradcam.gradcam(model, variables, images, weight=w))
                     for w in ('none', 'p_defect'))
  probability = np.asarray(jax.nn.softmax(model.apply(
      variables, augment.prepare_batch(None, images, None)))[:, gradcam.DEFECT])
  np.testing.assert_allclose(weighted, plain * probability[:, None, None], rtol=1e-6, atol=1e-7)
  assert weighted[0].max() < weighted[1].max()
  with pytest.raises(ValueError, match='weight'):
    gradcam.gradcam(model, variables, images, weight='max')
