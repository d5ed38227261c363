# The trainer part of the GPU check, sourced by scripts/gpu_check.sh (which
# defines step, $build and $out). World size 1. Data: byte tokens of this
# repository's own text (the GPU image has no datasets and no network).
st=$build/shardtune
data=/tmp/gpu_data
mkdir -p "$data"
cat README.md src/*/*.cpp src/*/*.h include/shardtune/*/*.h tests/*/*.cpp > "$data/corpus.txt"
step prep $st prep --tokenizer byte --input "$data/corpus.txt" --output "$data/c" --val-fraction 0.02 --overwrite
common=(data.train="$data/c-train-*.h5" checkpoint.resume=never log.progress=off log.every=1)
tiny=(configs/example.yaml "${common[@]}" model.arch=gpt2 model.hidden_size=128 model.num_layers=2
      model.num_heads=4 model.max_positions=128 data.val="$data/c-val-*.h5" data.seq_len=64 data.micro_batch=4
      data.global_batch=4 eval.max_samples=8 optim.lr=1e-3)

# One fp32 step on the GPU equals the CPU step: loss and gradient norm, and
# the updated parameters (L2 over the model), within 1e-4 relative.
step train_step_cpu $st train "${tiny[@]}" train.steps=1 model.device=cpu train.output_dir=/tmp/gs_cpu
step train_step_gpu $st train "${tiny[@]}" train.steps=1 model.device=cuda train.output_dir=/tmp/gs_gpu
step gpu_step_equals_cpu python3 scripts/gpu_check_compare.py step /tmp/gs_cpu /tmp/gs_gpu

# Every ZeRO stage, and offload, trains on the GPU (bf16, 3 steps).
for z in 0 1 2 3; do
  step "train_gpu_zero$z" $st train "${tiny[@]}" train.steps=3 model.dtype=bfloat16 parallel.zero_stage=$z \
    train.output_dir=/tmp/gz$z
done
for z in 2 3; do
  step "train_gpu_zero${z}_offload" $st train "${tiny[@]}" train.steps=3 model.dtype=bfloat16 \
    parallel.zero_stage=$z optim.offload=cpu train.output_dir=/tmp/gzo$z
done

# GPT-2 124M, bf16, sequence 1024, micro-batch 8: shardtune vs the same
# model and batch in plain PyTorch, same GPU, same run; steps 21-30 timed.
step gpt2_124m_shardtune $st train configs/gpt2-124m-pretrain.yaml "${common[@]}" data.val=[] \
  data.micro_batch=8 data.global_batch=8 train.steps=30 log.every=10 checkpoint.at_end=false \
  train.output_dir=/tmp/g124
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
peak=0
case "$gpu" in
  *"H100 PCIe"*) peak=756.5 ;;
  *H100* | *H200*) peak=989.4 ;;
  *A100*) peak=312 ;;
esac
step gpt2_124m_pytorch sh -c "python3 benchmarks/train/pytorch_gpt2.py --batch 8 --seq 1024 --steps 30 \
  --measure 10 --peak-tflops $peak > /tmp/g124_pytorch.json"

# A full fine-tune whose 16 bytes/parameter do not fit the GPU: a 5.5B
# Llama-shaped model (88 GB of model state) with ZeRO 3 + CPU offload.
step llama_5b_zero3_offload $st train configs/llama-8b-full-zero3-offload.yaml "${common[@]}" \
  'model.init=""' model.arch=llama model.vocab_size=32000 model.hidden_size=4096 model.num_layers=24 \
  model.num_heads=32 model.num_kv_heads=8 model.intermediate_size=14336 model.max_positions=4096 \
  data.val=[] data.seq_len=1024 data.micro_batch=1 data.global_batch=1 train.steps=3 \
  checkpoint.at_end=false train.output_dir=/tmp/big

python3 scripts/gpu_check_compare.py table "$gpu" /tmp/g124 /tmp/g124_pytorch.json /tmp/big \
  > "$out/train_table.txt"
