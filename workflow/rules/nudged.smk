# Nudged run: the model relaxed toward ERA5 u, v; its relaxation tendency is the training target.
# The model is the backend's (config `backend`, nudgeml.gcm.registry): the stand-in in this job's
# process, or LMDZ's gcm.e run by the job kit with srun inside this rule's SLURM job.


rule nudged:
    input:
        unpack(nudged_inputs),
    output:
        histhf=f"{OUT}/nudged/histhf.nc",
        guide=f"{OUT}/nudged/guide_ins.nc",
    log:
        f"{OUT}/logs/nudged.log",
    benchmark:
        f"{OUT}/benchmarks/nudged.tsv"
    priority: ML_CHAIN_PRIORITY
    conda:
        "../../envs/nudgeml.yaml"
    threads: threads_of("nudged")
    resources:
        **gcm_res("nudged"),
    params:
        backend=config["backend"],
        cfg=nudged_params(),
    script:
        "../scripts/nudged.py"


if PRECOMPILE:

    # The backend's nudged and free windows compiled into the persistent cache (jax_cache_dir; without
    # one there is nothing to keep them in) on the core the truth run leaves idle: the nudged run, which
    # waits for the truth, then reads them instead of compiling (benchmarks/README.md). After the grid
    # job, so the truth and the grid start first.
    rule precompile:
        input:
            grid=rules.model_grid.output.nc,
        output:
            record=f"{OUT}/nudged/precompile.json",
        log:
            f"{OUT}/logs/precompile.log",
        benchmark:
            f"{OUT}/benchmarks/precompile.tsv"
        priority: ML_CHAIN_PRIORITY
        conda:
            "../../envs/nudgeml.yaml"
        threads: threads_of("precompile")
        resources:
            **res("precompile"),
        params:
            backend=config["backend"],
            cfg=nudged_params(),  # the keys the nudged run reads: its programs are compiled from them
        script:
            "../scripts/precompile.py"
