using System.Text.Json.Nodes;

namespace Retrieval.Core.Features;

/// <summary>
/// What a service knows about a user's history at request time, bucketised at the training rows' quantiles:
/// prior_ratings (how many ratings the user made before this one) and time_since_first_rating (seconds since
/// the user's first rating). Both come from <see cref="QueryInput.Activity"/>, which training and the query
/// service compute with the same <see cref="Artifact.UserHistory"/> (or the request carries). A user without
/// history counts zero ratings and zero seconds, as a user's first rating does.
/// </summary>
public sealed class ActivityFeature : Feature<QueryInput>
{
    public const string PriorRatings = "prior_ratings";
    public const string TimeSinceFirstRating = "time_since_first_rating";

    public ActivityFeature(string name, QuantileBuckets buckets)
    {
        FeatureName = name is PriorRatings or TimeSinceFirstRating ? name : throw new ArgumentException($"unknown activity feature '{name}'");
        Buckets = buckets;
    }

    private string FeatureName { get; }
    public QuantileBuckets Buckets { get; }

    public override string Name => FeatureName;
    public override FeatureEncoding Encoding => FeatureEncoding.Index;
    public override int Cardinality => Buckets.Cardinality;

    public static ActivityFeature Fit(string name, IEnumerable<QueryInput> rows, int buckets) =>
        new(name, QuantileBuckets.Fit(rows.Select(r => Value(name, r)), buckets));

    private static double Value(string name, QueryInput input) => name == PriorRatings
        ? input.Activity.PriorRatings
        : input.Activity.SecondsSinceFirstRating(input.Timestamp);

    public override void Encode(QueryInput input, Span<int> indices, Span<float> values) => indices[0] = Buckets.Bucket(Value(FeatureName, input));

    public override JsonObject Save(string directory) => new() { ["name"] = Name, ["boundaries"] = Buckets.ToJson() };

    public static ActivityFeature Load(JsonObject state) =>
        new(FeatureState.String(state, "name"), QuantileBuckets.FromJson(FeatureState.Array(state, "boundaries")));
}
