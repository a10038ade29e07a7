using Retrieval.Core.Features;

namespace Retrieval.Core.Artifact;

/// <summary>
/// What the model knows of each user's past, as the artifact ships it (history.safetensors, users in the order of
/// vocab/history.users.txt): the movies each user rated in the training rows (CSR offsets and sorted distinct
/// movie ids), and the times of those ratings (CSR offsets and sorted Unix seconds). The query service leaves out
/// rated movies with it and computes the history features (<see cref="ActivityAt"/>) from it, as training did.
/// </summary>
public sealed class UserHistory
{
    public const string File = "history.safetensors";
    public const string UsersFile = "vocab/history.users.txt";

    private readonly Dictionary<string, int> _userIndex;
    private readonly int[] _offsets;
    private readonly int[] _movieIds;
    private readonly int[] _timeOffsets;
    private readonly long[] _times;

    public UserHistory(IReadOnlyList<string> users, int[] offsets, int[] movieIds, int[]? timeOffsets = null, long[]? times = null)
    {
        CheckOffsets(offsets, users.Count, movieIds.Length, "movie ids");
        HasRatingTimes = timeOffsets is not null;
        timeOffsets ??= new int[users.Count + 1];
        times ??= [];
        CheckOffsets(timeOffsets, users.Count, times.Length, "rating times");
        _userIndex = new Dictionary<string, int>(users.Count, StringComparer.Ordinal);
        for (int i = 0; i < users.Count; i++)
        {
            _userIndex[users[i]] = i;
        }
        Users = users;
        _offsets = offsets;
        _movieIds = movieIds;
        _timeOffsets = timeOffsets;
        _times = times;
    }

    private static void CheckOffsets(int[] offsets, int users, int values, string what)
    {
        if (offsets.Length != users + 1 || offsets[0] != 0 || offsets[^1] != values)
        {
            throw new InvalidDataException($"history offsets ({offsets.Length}) do not match {users} users and {values} {what}");
        }
        for (int i = 1; i < offsets.Length; i++)
        {
            if (offsets[i] < offsets[i - 1])
            {
                throw new InvalidDataException($"history offsets of {what} must not decrease");
            }
        }
    }

    public IReadOnlyList<string> Users { get; }

    public static UserHistory Empty { get; } = new([], [0], []);

    /// <summary>Whether the history carries rating times (artifacts written before the history features do not).</summary>
    public bool HasRatingTimes { get; }

    public bool Contains(string userId) => _userIndex.ContainsKey(userId);

    /// <summary>The movie ids the user rated in training (empty for unknown users), sorted.</summary>
    public ReadOnlySpan<int> RatedBy(string userId) =>
        _userIndex.TryGetValue(userId, out var u) ? _movieIds.AsSpan(_offsets[u], _offsets[u + 1] - _offsets[u]) : [];

    /// <summary>How many of the user's ratings came strictly before <paramref name="at"/>, and when the first was; zero for unknown users.</summary>
    public UserActivity ActivityAt(string userId, long at)
    {
        if (!_userIndex.TryGetValue(userId, out var u) || _timeOffsets[u] == _timeOffsets[u + 1])
        {
            return default;
        }
        var times = _times.AsSpan(_timeOffsets[u], _timeOffsets[u + 1] - _timeOffsets[u]);
        return new UserActivity(SortedSearch.CountBelow<long>(times, at), times[0]);
    }

    /// <summary>Builds the history from ratings: each user's movies sorted and distinct, each user's rating times sorted.</summary>
    public static UserHistory FromRatings(IEnumerable<(string User, int MovieId, long Timestamp)> ratings)
    {
        var byUser = new SortedDictionary<string, (SortedSet<int> Movies, List<long> Times)>(StringComparer.Ordinal);
        foreach (var (user, movie, time) in ratings)
        {
            if (!byUser.TryGetValue(user, out var entry))
            {
                byUser[user] = entry = ([], []);
            }
            entry.Movies.Add(movie);
            entry.Times.Add(time);
        }
        var users = byUser.Keys.ToList();
        var offsets = new int[users.Count + 1];
        var timeOffsets = new int[users.Count + 1];
        var movies = new List<int>();
        var times = new List<long>();
        int u = 0;
        foreach (var (set, userTimes) in byUser.Values)
        {
            movies.AddRange(set);
            userTimes.Sort();
            times.AddRange(userTimes);
            u++;
            offsets[u] = movies.Count;
            timeOffsets[u] = times.Count;
        }
        return new UserHistory(users, offsets, [.. movies], timeOffsets, [.. times]);
    }

    public void Write(string directory)
    {
        Directory.CreateDirectory(Path.Combine(directory, "vocab"));
        VocabularyFile.Write(Path.Combine(directory, UsersFile), Users);
        var tensors = new List<NamedTensor> { NamedTensor.Of("offsets", _offsets, _offsets.Length), NamedTensor.Of("movie_ids", _movieIds, _movieIds.Length) };
        if (HasRatingTimes)
        {
            tensors.Add(NamedTensor.Of("time_offsets", _timeOffsets, _timeOffsets.Length));
            tensors.Add(NamedTensor.Of("rated_at", _times, _times.Length));
        }
        SafeTensors.Write(Path.Combine(directory, File), tensors);
    }

    public static UserHistory Read(string directory)
    {
        var tensors = SafeTensors.Read(Path.Combine(directory, File));
        var offsets = tensors.GetValueOrDefault("offsets")?.Ints ?? throw new InvalidDataException($"{File} has no I32 'offsets'");
        var movies = tensors.GetValueOrDefault("movie_ids")?.Ints ?? throw new InvalidDataException($"{File} has no I32 'movie_ids'");
        // Artifacts written before the history features carry no rating times: their users have no activity.
        var timeOffsets = tensors.GetValueOrDefault("time_offsets")?.Ints;
        var times = tensors.GetValueOrDefault("rated_at")?.Longs;
        if ((timeOffsets is null) != (times is null))
        {
            throw new InvalidDataException($"{File} has one of I32 'time_offsets' and I64 'rated_at' without the other");
        }
        return new UserHistory(VocabularyFile.Read(Path.Combine(directory, UsersFile)), offsets, movies, timeOffsets, times);
    }
}
