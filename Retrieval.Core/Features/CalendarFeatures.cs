using System.Text.Json.Nodes;

namespace Retrieval.Core.Features;

/// <summary>
/// hour_of_day and day_of_week: the request time's hour (0–23) or weekday (Sunday = 0) in a time zone (UTC by
/// default), each an embedding row. Unlike timestamp buckets these repeat, so times after the training period
/// still land on trained rows. Row 0 is out of vocabulary (kept for symmetry with the other lookups).
/// </summary>
public sealed class CalendarFeature : Feature<QueryInput>
{
    public const string HourOfDay = "hour_of_day";
    public const string DayOfWeek = "day_of_week";

    private readonly TimeZoneInfo _zone;

    public CalendarFeature(string name, string timeZone)
    {
        if (name is not (HourOfDay or DayOfWeek))
        {
            throw new ArgumentException($"unknown calendar feature '{name}'");
        }
        FeatureName = name;
        TimeZone = timeZone;
        _zone = timeZone == "UTC" ? TimeZoneInfo.Utc : TimeZoneInfo.FindSystemTimeZoneById(timeZone);
    }

    private string FeatureName { get; }

    /// <summary>An IANA time zone id, or UTC.</summary>
    public string TimeZone { get; }

    public override string Name => FeatureName;
    public override FeatureEncoding Encoding => FeatureEncoding.Index;
    public override int Cardinality => FeatureName == HourOfDay ? 25 : 8;

    public int Index(long timestamp)
    {
        var local = TimeZoneInfo.ConvertTime(DateTimeOffset.FromUnixTimeSeconds(timestamp), _zone);
        return 1 + (FeatureName == HourOfDay ? local.Hour : (int)local.DayOfWeek);
    }

    public override void Encode(QueryInput input, Span<int> indices, Span<float> values) => indices[0] = Index(input.Timestamp);

    public override JsonObject Save(string directory) => new() { ["name"] = Name, ["timeZone"] = TimeZone };

    public static CalendarFeature Load(JsonObject state) =>
        new(FeatureState.String(state, "name"), state["timeZone"]?.GetValue<string>() ?? "UTC");
}
