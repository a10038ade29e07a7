namespace Retrieval.Core.Artifact;

/// <summary>
/// The movies each known user rated in the training rows, as the artifact ships them (history.safetensors:
/// CSR offsets and movie ids, users in the order of vocab/history.users.txt). The query service uses it to
/// leave out what a user has already rated.
/// </summary>
public sealed class UserHistory
{
    public const string File = "history.safetensors";
    public const string UsersFile = "vocab/history.users.txt";

    private readonly Dictionary<string, int> _userIndex;
    private readonly int[] _offsets;
    private readonly int[] _movieIds;

    public UserHistory(IReadOnlyList<string> users, int[] offsets, int[] movieIds)
    {
        if (offsets.Length != users.Count + 1 || offsets[0] != 0 || offsets[^1] != movieIds.Length)
        {
            throw new InvalidDataException($"history offsets ({offsets.Length}) do not match {users.Count} users and {movieIds.Length} movie ids");
        }
        for (int i = 1; i < offsets.Length; i++)
        {
            if (offsets[i] < offsets[i - 1])
            {
                throw new InvalidDataException("history offsets must not decrease");
            }
        }
        _userIndex = new Dictionary<string, int>(users.Count, StringComparer.Ordinal);
        for (int i = 0; i < users.Count; i++)
        {
            _userIndex[users[i]] = i;
        }
        Users = users;
        _offsets = offsets;
        _movieIds = movieIds;
    }

    public IReadOnlyList<string> Users { get; }

    public static UserHistory Empty { get; } = new([], [0], []);

    public bool Contains(string userId) => _userIndex.ContainsKey(userId);

    /// <summary>The movie ids the user rated in training (empty for unknown users), sorted.</summary>
    public ReadOnlySpan<int> RatedBy(string userId) =>
        _userIndex.TryGetValue(userId, out var u) ? _movieIds.AsSpan(_offsets[u], _offsets[u + 1] - _offsets[u]) : [];

    /// <summary>Builds the history from (user, movie) pairs; each user's movies sorted and distinct.</summary>
    public static UserHistory FromPairs(IEnumerable<(string User, int MovieId)> pairs)
    {
        var byUser = new SortedDictionary<string, SortedSet<int>>(StringComparer.Ordinal);
        foreach (var (user, movie) in pairs)
        {
            if (!byUser.TryGetValue(user, out var set))
            {
                byUser[user] = set = [];
            }
            set.Add(movie);
        }
        var users = byUser.Keys.ToList();
        var offsets = new int[users.Count + 1];
        var movies = new List<int>();
        int u = 0;
        foreach (var set in byUser.Values)
        {
            movies.AddRange(set);
            offsets[++u] = movies.Count;
        }
        return new UserHistory(users, offsets, [.. movies]);
    }

    public void Write(string directory)
    {
        Directory.CreateDirectory(Path.Combine(directory, "vocab"));
        Features.VocabularyFile.Write(Path.Combine(directory, UsersFile), Users);
        SafeTensors.Write(Path.Combine(directory, File),
            [NamedTensor.Of("offsets", _offsets, _offsets.Length), NamedTensor.Of("movie_ids", _movieIds, _movieIds.Length)]);
    }

    public static UserHistory Read(string directory)
    {
        var tensors = SafeTensors.Read(Path.Combine(directory, File));
        var offsets = tensors.GetValueOrDefault("offsets")?.Ints ?? throw new InvalidDataException($"{File} has no I32 'offsets'");
        var movies = tensors.GetValueOrDefault("movie_ids")?.Ints ?? throw new InvalidDataException($"{File} has no I32 'movie_ids'");
        return new UserHistory(Features.VocabularyFile.Read(Path.Combine(directory, UsersFile)), offsets, movies);
    }
}
