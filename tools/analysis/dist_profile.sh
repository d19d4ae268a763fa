#!/usr/bin/env bash
# Distributed SC/EF profiling with torchrun: the images are shared out over the processes, rank 0 writes the outputs.
#   tools/analysis/dist_profile.sh NPROC [profile_vfm.py args...]
#   tools/analysis/dist_profile.sh 8 --dataset-config configs/mask2former_d3s2_cityscapes.py --num-images 500 \
#       --encoder dinov3=configs/_base_/encoders.py:dinov3_vitb16 --encoder sam2=configs/_base_/encoders.py:sam2_hiera_bplus
NPROC=$1
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29501}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON=${PYTHON:-python}

exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" --nproc_per_node="$NPROC" \
    --master_port="$PORT" \
    "$DIR/profile_vfm.py" --launcher pytorch "${@:2}"
