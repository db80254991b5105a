# The paper's Table 1 (rows from eval.methods) with intervals, paired differences to each reference
# row (Baseline, Resample), novelty and fidelity of every synthetic set, what each variant does,
# a forest plot of the differences, a per-class AP plot, sample, novelty and memorisation panels
# and, on the demo, every variant's fidelity funnel side by side; all flagged for `snakemake --report`.


rule report:
    input:
        unpack(report_inputs),
    output:
        table=report(
            f"{OUT}/report/table1.csv",
            caption="../report/table1.rst",
            category="Table 1",
        ),
        markdown=f"{OUT}/report/table1.md",
        ap=report(
            f"{OUT}/report/per_class_ap.png",
            caption="../report/per_class_ap.rst",
            category="Table 1",
        ),
        forest=report(
            f"{OUT}/report/forest.png",
            caption="../report/forest.rst",
            category="Table 1",
        ),
        memorisation=report(
            f"{OUT}/report/memorisation.png",
            caption="../report/memorisation.rst",
            category="Samples",
        ),
        novelty=report(
            f"{OUT}/report/novelty.png",
            caption="../report/novelty.rst",
            category="Samples",
        ),
        samples=report(
            f"{OUT}/report/samples.png",
            caption="../report/samples.rst",
            category="Samples",
        ),
    log:
        "logs/report/report.log",
    benchmark:
        "benchmarks/report/report.tsv"
    conda:
        ENV
    params:
        window=WINDOW,
        methods=json.dumps(eval_methods()),
        variants=variant_notes(),
        outdir=lambda wildcards, output: os.path.dirname(output.table),
        classifier_dir=f"{OUT}/eval/classifier",
        fid_dir=f"{OUT}/eval/fid",
        synthetic_dir=f"{OUT}/synthetic",
        detector=lambda wildcards, input: input.get("detector", ""),
    shell:
        stage_command("report")
