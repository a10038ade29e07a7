using System.Text.Json.Nodes;
using Retrieval.Core.Data;

namespace Retrieval.Core.Features;

/// <summary>
/// A user's demographics as the caller passes them (MovieLens 100k/1M have them for their users): age_group,
/// gender, occupation, zip_prefix. Each is a string lookup fitted on the training rows; a missing or unseen value
/// takes the out-of-vocabulary row 0, never an error.
/// </summary>
public sealed class DemographicFeature : Feature<QueryInput>
{
    public const string AgeGroup = "age_group";
    public const string Gender = "gender";
    public const string Occupation = "occupation";
    public const string ZipPrefix = "zip_prefix";

    public static readonly IReadOnlyList<string> Names = [AgeGroup, Gender, Occupation, ZipPrefix];

    /// <summary>MovieLens 1M's age groups by their lower bound; 100k's exact ages map onto them.</summary>
    private static readonly int[] AgeGroupStarts = [1, 18, 25, 35, 45, 50, 56];

    /// <summary>Leading characters of a zip code kept: a region, shared by many users, not a user's own code.</summary>
    public const int ZipPrefixLength = 2;

    public DemographicFeature(string name, StringLookup lookup)
    {
        FeatureName = Names.Contains(name) ? name : throw new ArgumentException($"unknown demographic feature '{name}'");
        Lookup = lookup;
    }

    private string FeatureName { get; }
    public StringLookup Lookup { get; }

    public override string Name => FeatureName;
    public override FeatureEncoding Encoding => FeatureEncoding.Index;
    public override int Cardinality => Lookup.Cardinality;

    public static DemographicFeature Fit(string name, IEnumerable<QueryInput> rows) =>
        new(name, StringLookup.Fit(rows.Select(r => Value(name, r.Profile)).OfType<string>()));

    /// <summary>The looked-up value of a profile, or null when the profile lacks it.</summary>
    public static string? Value(string name, UserProfile? profile) => name switch
    {
        AgeGroup => profile?.Age is { } age and > 0 ? AgeGroupOf(age) : null,
        Gender => Normalized(profile?.Gender)?.ToUpperInvariant(),
        Occupation => Normalized(profile?.Occupation)?.ToLowerInvariant(),
        ZipPrefix => Normalized(profile?.ZipCode) is { } zip ? zip[..Math.Min(ZipPrefixLength, zip.Length)].ToUpperInvariant() : null,
        _ => throw new ArgumentException($"unknown demographic feature '{name}'"),
    };

    private static string? Normalized(string? s) => string.IsNullOrWhiteSpace(s) ? null : s.Trim();

    private static string AgeGroupOf(int age)
    {
        int start = AgeGroupStarts[0];
        foreach (var s in AgeGroupStarts)
        {
            if (age >= s)
            {
                start = s;
            }
        }
        return start.ToString(System.Globalization.CultureInfo.InvariantCulture);
    }

    public override void Encode(QueryInput input, Span<int> indices, Span<float> values) =>
        indices[0] = Value(FeatureName, input.Profile) is { } v ? Lookup[v] : 0;

    public override JsonObject Save(string directory) =>
        new() { ["name"] = Name, ["vocabulary"] = new JsonArray([.. Lookup.Vocabulary.Select(v => JsonValue.Create(v))]) };

    public static DemographicFeature Load(JsonObject state) =>
        new(FeatureState.String(state, "name"), new StringLookup([.. FeatureState.Array(state, "vocabulary").Select(n => n!.GetValue<string>())]));
}
