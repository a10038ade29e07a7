using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Retrieval.Core.Search;

namespace Retrieval.Trainer.Ablation;

/// <summary>Writes the ablation as report.json (the documented interface), report.md and a chart per split.</summary>
public static class AblationReport
{
    public const string JsonFile = "report.json";
    public const string MarkdownFile = "report.md";

    public static void Write(string directory, IReadOnlyList<AblationRow> rows, JsonObject settings)
    {
        Directory.CreateDirectory(directory);
        File.WriteAllText(Path.Combine(directory, JsonFile), ToJson(rows, settings).ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        File.WriteAllText(Path.Combine(directory, MarkdownFile), ToMarkdown(rows, settings));
        var splits = rows.Select(r => r.Split).Distinct().ToList();
        foreach (var split in splits)
        {
            var chart = Path.Combine(directory, $"chart-{split}.png");
            AblationChart.Write(chart, [.. rows.Where(r => r.Split == split)], split);
            if (split == splits[0])
            {
                File.Copy(chart, Path.Combine(directory, "chart.png"), overwrite: true);
            }
        }
    }

    public static JsonObject ToJson(IReadOnlyList<AblationRow> rows, JsonObject settings)
    {
        var results = new JsonArray();
        foreach (var row in rows)
        {
            var result = new JsonObject
            {
                ["featureSet"] = row.FeatureSet,
                ["configuration"] = row.Changes,
                ["split"] = row.Split,
                ["seeds"] = new JsonArray([.. row.Seeds.Select(s => JsonValue.Create(s))]),
                ["train"] = Part(row.Train),
                ["test"] = Part(row.Test),
                ["trainSeconds"] = Math.Round(row.TrainSeconds, 3),
            };
            if (row.TestNewUsers.Count > 0)
            {
                result["testNewUsers"] = Part(row.TestNewUsers);
                result["newUserShare"] = Math.Round(row.NewUserShare, 4);
            }
            results.Add(result);
        }
        return new JsonObject { ["results"] = results, ["settings"] = settings.DeepClone() };
    }

    private static JsonObject Part(IReadOnlyList<TopKAccuracy> runs)
    {
        var part = new JsonObject();
        foreach (int k in TopKAccuracy.DefaultKs)
        {
            var s = Summary.Of([.. runs.Select(r => r[k])]);
            part[$"top{k}"] = new JsonObject
            {
                ["mean"] = Math.Round(s.Mean, 6),
                ["std"] = Math.Round(s.Std, 6),
                ["values"] = new JsonArray([.. runs.Select(r => JsonValue.Create(Math.Round(r[k], 6)))]),
            };
        }
        return part;
    }

    public static string ToMarkdown(IReadOnlyList<AblationRow> rows, JsonObject settings)
    {
        var sb = new StringBuilder();
        sb.AppendLine("# Ablation: do context features help retrieval?").AppendLine();
        sb.AppendLine(CultureInfo.InvariantCulture, $"Settings: `{settings.ToJsonString()}`").AppendLine();
        sb.AppendLine("FactorizedTopK accuracy against the whole catalogue, mean ± std over seeds. ")
          .AppendLine("`most-popular` ranks movies by their count in the training rows: the baseline any model must beat. ")
          .AppendLine("The configuration column says how a row differs from the command line's settings (by default the tutorial's model) besides its query features; ")
          .AppendLine("`new users` is test top-100 over the test rows of users absent from the training rows.").AppendLine();
        foreach (var split in rows.Select(r => r.Split).Distinct())
        {
            sb.AppendLine(CultureInfo.InvariantCulture, $"## {split} split").AppendLine();
            sb.AppendLine(Table(rows.Where(r => r.Split == split).ToList()));
            sb.AppendLine(CultureInfo.InvariantCulture, $"![test top-k accuracy, {split} split](chart-{split}.png)").AppendLine();
        }
        return sb.ToString();
    }

    /// <summary>The table as it appears in the README: one row per configuration, test and train top-k.</summary>
    public static string Table(IReadOnlyList<AblationRow> rows)
    {
        bool newUsers = rows.Any(r => r.TestNewUsers.Count > 0);
        var sb = new StringBuilder();
        sb.Append("| feature set | configuration | seeds |");
        foreach (int k in TopKAccuracy.DefaultKs)
        {
            sb.Append(CultureInfo.InvariantCulture, $" test top-{k} |");
        }
        if (newUsers)
        {
            sb.Append(CultureInfo.InvariantCulture, $" new users ({rows[0].NewUserShare:P0}) top-100 |");
        }
        sb.AppendLine(" train top-100 |");
        sb.Append("| --- | --- | --- |");
        foreach (int _ in TopKAccuracy.DefaultKs)
        {
            sb.Append(" --- |");
        }
        sb.AppendLine(newUsers ? " --- | --- |" : " --- |");
        foreach (var row in rows)
        {
            sb.Append(CultureInfo.InvariantCulture, $"| {row.FeatureSet} | {(row.Changes.Length == 0 ? "-" : row.Changes)} | ")
              .Append(row.Seeds.Count == 0 ? "-" : row.Seeds.Count.ToString(CultureInfo.InvariantCulture)).Append(" |");
            foreach (int k in TopKAccuracy.DefaultKs)
            {
                sb.Append(' ').Append(Format(row.TestSummary(k))).Append(" |");
            }
            if (newUsers)
            {
                sb.Append(' ').Append(row.TestNewUsers.Count > 0 ? Format(row.TestNewUsersSummary(100)) : "-").Append(" |");
            }
            sb.Append(' ').Append(Format(row.TrainSummary(100))).AppendLine(" |");
        }
        return sb.ToString();
    }

    private static string Format(Summary s) =>
        s.Std > 0 ? string.Create(CultureInfo.InvariantCulture, $"{s.Mean:F3} ± {s.Std:F3}")
                  : string.Create(CultureInfo.InvariantCulture, $"{s.Mean:F3}");
}
