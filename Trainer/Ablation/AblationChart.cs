using Retrieval.Core.Search;
using ScottPlot;

namespace Retrieval.Trainer.Ablation;

/// <summary>A grouped bar chart of test top-k accuracy per feature set, with ±std error bars.</summary>
public static class AblationChart
{
    public static void Write(string path, IReadOnlyList<AblationRow> rows, string split)
    {
        var plot = new Plot();
        var palette = new ScottPlot.Palettes.Category10();
        var ks = TopKAccuracy.DefaultKs;
        int groups = rows.Count;
        var ticks = new List<Tick>();
        for (int s = 0; s < groups; s++)
        {
            var color = palette.GetColor(s);
            var bars = new List<Bar>();
            for (int j = 0; j < ks.Length; j++)
            {
                var summary = rows[s].TestSummary(ks[j]);
                bars.Add(new Bar
                {
                    Position = j * (groups + 1) + s,
                    Value = summary.Mean,
                    Error = summary.Std,
                    FillColor = color,
                });
            }
            var series = plot.Add.Bars(bars);
            series.LegendText = rows[s].Label;
        }
        for (int j = 0; j < ks.Length; j++)
        {
            ticks.Add(new Tick(j * (groups + 1) + (groups - 1) / 2.0, $"top-{ks[j]}"));
        }
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual([.. ticks]);
        plot.Axes.Margins(bottom: 0);
        plot.Title($"Test top-k accuracy ({split} split, FactorizedTopK over the whole catalogue)");
        plot.YLabel("accuracy");
        plot.ShowLegend(Edge.Bottom); // outside the data area: long configuration labels must not hide the bars
        plot.SavePng(path, 1200, 620 + 24 * rows.Count);
    }
}
