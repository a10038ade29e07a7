using System.Text.Json.Nodes;
using Retrieval.Core.Data;

namespace Retrieval.Core.Features;

/// <summary>Fitting settings shared by the feature plugins.</summary>
public sealed record FeatureOptions(int TimestampBuckets = 1000, int MaxTokens = 10_000, string TimeZone = "UTC")
{
    /// <summary>Buckets of timestamp_clamped.</summary>
    public int ClampedTimestampBuckets { get; init; } = 100;

    /// <summary>Quantile buckets of prior_ratings, time_since_first_rating and release_year (fewer when values repeat).</summary>
    public int QuantileBuckets { get; init; } = 20;
}

/// <summary>
/// The registry of feature plugins: names users write in <c>--query-features</c>/<c>--candidate-features</c>,
/// aliases (the tutorial's <c>timestamp</c> = buckets + normalised value), fitting, and loading from a manifest.
/// </summary>
public static class FeatureCatalog
{
    public static readonly IReadOnlyList<string> DefaultQueryFeatures = [UserIdFeature.FeatureName];
    public static readonly IReadOnlyList<string> DefaultCandidateFeatures = [MovieTitleFeature.FeatureName, TitleTextFeature.FeatureName];

    private static readonly Dictionary<string, string[]> QueryAliases = new()
    {
        ["timestamp"] = [TimestampBuckets.FeatureName, TimestampNormalization.FeatureName],
        ["history"] = [ActivityFeature.PriorRatings, ActivityFeature.TimeSinceFirstRating],
        ["demographics"] = [.. DemographicFeature.Names],
    };

    public static readonly IReadOnlyList<string> QueryFeatureNames =
        [UserIdFeature.FeatureName, TimestampBuckets.FeatureName, TimestampNormalization.FeatureName, "timestamp",
         CalendarFeature.HourOfDay, CalendarFeature.DayOfWeek, TimestampClamped.FeatureName,
         ActivityFeature.PriorRatings, ActivityFeature.TimeSinceFirstRating, "history", .. DemographicFeature.Names, "demographics"];

    public static readonly IReadOnlyList<string> CandidateFeatureNames =
        [MovieTitleFeature.FeatureName, TitleTextFeature.FeatureName, GenresFeature.FeatureName, ReleaseYearFeature.FeatureName];

    /// <summary>Parses "user_id,timestamp" into plugin names, expanding aliases; rejects unknown names.</summary>
    public static IReadOnlyList<string> ParseQuery(string list) => Parse(list, QueryFeatureNames, QueryAliases, "query");

    public static IReadOnlyList<string> ParseCandidate(string list) => Parse(list, CandidateFeatureNames, [], "candidate");

    private static List<string> Parse(string list, IReadOnlyList<string> known, Dictionary<string, string[]> aliases, string tower)
    {
        var names = new List<string>();
        foreach (var raw in list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (!known.Contains(raw))
            {
                throw new ArgumentException($"unknown {tower} feature '{raw}'; known: {string.Join(", ", known)}");
            }
            foreach (var name in aliases.TryGetValue(raw, out var expanded) ? expanded : [raw])
            {
                if (!names.Contains(name))
                {
                    names.Add(name);
                }
            }
        }
        return names.Count == 0 ? throw new ArgumentException($"the {tower} tower needs at least one feature") : names;
    }

    /// <summary>The short form users wrote: timestamp_bucket + timestamp_norm shown as timestamp.</summary>
    public static string Describe(IReadOnlyList<string> names)
    {
        var parts = names.ToList();
        foreach (var (alias, expanded) in QueryAliases)
        {
            if (expanded.All(parts.Contains))
            {
                int at = parts.IndexOf(expanded[0]);
                parts.RemoveAll(expanded.Contains);
                parts.Insert(Math.Min(at, parts.Count), alias);
            }
        }
        return string.Join(',', parts);
    }

    public static Feature<QueryInput> FitQuery(string name, IReadOnlyList<QueryInput> training, FeatureOptions options) => name switch
    {
        UserIdFeature.FeatureName => UserIdFeature.Fit(training),
        TimestampBuckets.FeatureName => TimestampBuckets.Fit(training, options.TimestampBuckets),
        TimestampNormalization.FeatureName => TimestampNormalization.Fit(training),
        CalendarFeature.HourOfDay or CalendarFeature.DayOfWeek => new CalendarFeature(name, options.TimeZone),
        TimestampClamped.FeatureName => TimestampClamped.Fit(training, options.ClampedTimestampBuckets),
        ActivityFeature.PriorRatings or ActivityFeature.TimeSinceFirstRating => ActivityFeature.Fit(name, training, options.QuantileBuckets),
        DemographicFeature.AgeGroup or DemographicFeature.Gender or DemographicFeature.Occupation or DemographicFeature.ZipPrefix =>
            DemographicFeature.Fit(name, training),
        _ => throw new ArgumentException($"unknown query feature '{name}'"),
    };

    public static Feature<Movie> FitCandidate(string name, IReadOnlyList<Movie> catalogue, FeatureOptions options) => name switch
    {
        MovieTitleFeature.FeatureName => MovieTitleFeature.Fit(catalogue),
        TitleTextFeature.FeatureName => TitleTextFeature.Fit(catalogue, options.MaxTokens),
        GenresFeature.FeatureName => GenresFeature.Fit(catalogue),
        ReleaseYearFeature.FeatureName => ReleaseYearFeature.Fit(catalogue, options.QuantileBuckets),
        _ => throw new ArgumentException($"unknown candidate feature '{name}'"),
    };

    public static Feature<QueryInput> LoadQuery(JsonObject state, string directory) => FeatureState.String(state, "name") switch
    {
        UserIdFeature.FeatureName => UserIdFeature.Load(state, directory),
        TimestampBuckets.FeatureName => TimestampBuckets.Load(state, directory),
        TimestampNormalization.FeatureName => TimestampNormalization.Load(state, directory),
        CalendarFeature.HourOfDay or CalendarFeature.DayOfWeek => CalendarFeature.Load(state),
        TimestampClamped.FeatureName => TimestampClamped.Load(state),
        ActivityFeature.PriorRatings or ActivityFeature.TimeSinceFirstRating => ActivityFeature.Load(state),
        DemographicFeature.AgeGroup or DemographicFeature.Gender or DemographicFeature.Occupation or DemographicFeature.ZipPrefix =>
            DemographicFeature.Load(state),
        var other => throw new InvalidDataException($"the manifest names query feature '{other}', which this version does not know"),
    };

    public static Feature<Movie> LoadCandidate(JsonObject state, string directory) => FeatureState.String(state, "name") switch
    {
        MovieTitleFeature.FeatureName => MovieTitleFeature.Load(state, directory),
        TitleTextFeature.FeatureName => TitleTextFeature.Load(state, directory),
        GenresFeature.FeatureName => GenresFeature.Load(state, directory),
        ReleaseYearFeature.FeatureName => ReleaseYearFeature.Load(state, directory),
        var other => throw new InvalidDataException($"the manifest names candidate feature '{other}', which this version does not know"),
    };
}

/// <summary>Reads fitted values from a feature's manifest entry, with errors that say which is missing.</summary>
internal static class FeatureState
{
    private static JsonNode Get(JsonObject state, string key) =>
        state[key] ?? throw new InvalidDataException($"feature '{state["name"]}' has no '{key}' in the manifest");

    public static string String(JsonObject state, string key) => Get(state, key).GetValue<string>();
    public static int Int(JsonObject state, string key) => Get(state, key).GetValue<int>();
    public static float Float(JsonObject state, string key) => Get(state, key).GetValue<float>();
    public static JsonArray Array(JsonObject state, string key) => Get(state, key).AsArray();
}
