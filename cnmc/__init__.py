"""The core that training, serving and the Hub tools share: cells, backbones, preprocessing, model folders."""
